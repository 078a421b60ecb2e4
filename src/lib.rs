//! wingold: ready-to-clone Windows guest images for Linux KVM hosts, built offline.
//!
//! Layers (see ARCHITECTURE.md), lower ones knowing nothing of higher ones:
//! `image` (block devices, qcow2, raw, partitions) → … → `cli`.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod cli;
pub mod confine;
pub mod drivers;
pub mod error;
pub mod firstboot;
pub mod fsutil;
pub mod golden;
pub mod guest;
pub mod hive;
pub mod image;
pub mod input;
pub mod interrupt;
pub mod launch;
pub mod media;
pub mod net;
pub mod note;
pub mod ntfs;
pub mod publish;
pub mod reg;
pub mod registry;
pub mod unattend;
pub mod virtio;
