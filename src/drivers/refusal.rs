//! Why a driver plan is refused: the ISO, its folders or the Windows found do not
//! fit. Each is bad input: nothing has been written when one is returned.

use crate::error::Setting;

/// A refused driver plan; `iso` is the ISO as the user named it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{product}: driver injection into ARM64 Windows is not supported (nobody has \
         boot-tested it); leave out {drivers}",
        drivers = Setting::Drivers
    )]
    Arm64 { product: String },

    #[error("{iso}: no driver {name:?} on this virtio-win ISO; it has {}", .has.join(", "))]
    UnknownDriver {
        iso: String,
        name: String,
        has: Vec<String>,
    },

    #[error("{iso}: no {name} folder for {product} {arch}: tried {}", listed(.tried))]
    NoFolder {
        iso: String,
        name: String,
        product: String,
        arch: String,
        tried: Vec<String>,
    },

    #[error(
        "{hive}: the SYSTEM hive {} but this is Windows {version} ({product}), which {}; \
         not guessing how to register the boot driver",
        if *.has_ddb { "has a DriverDatabase" } else { "has no DriverDatabase" },
        if *.has_ddb { "uses the CriticalDeviceDatabase" } else { "keeps its drivers there" }
    )]
    Registration {
        hive: String,
        has_ddb: bool,
        version: String,
        product: String,
    },

    #[error("{iso}: {folder} has no INF file; this is no virtio-win driver folder")]
    NoInf { iso: String, folder: String },

    #[error(
        "{iso}: {inf} lists neither PCI\\{legacy} nor PCI\\{modern} in its models, the \
         devices {service} drives; a wrong or damaged driver folder"
    )]
    InfLacksId {
        iso: String,
        inf: String,
        legacy: &'static str,
        modern: &'static str,
        service: String,
    },

    #[error("{iso}: {path}: {problem}; Windows cannot hold that file name")]
    FileName {
        iso: String,
        path: String,
        problem: crate::guest::names::Problem,
    },

    #[error("{iso}: {inf}: {problem}; a damaged or hand-edited driver folder")]
    InfEntry {
        iso: String,
        inf: String,
        problem: String,
    },

    #[error(
        "{iso}: {inf} is not in the SCSIAdapter class ({}); not a storage driver",
        .class.as_deref().unwrap_or("no ClassGUID")
    )]
    NotStorage {
        iso: String,
        inf: String,
        class: Option<String>,
    },

    #[error("{iso}: {folder} has no {sys}")]
    NoSys {
        iso: String,
        folder: String,
        sys: String,
    },

    #[error("{iso}: {path} is not a PE driver image")]
    NotPe { iso: String, path: String },

    #[error("{iso}: {path} is built for {built}, but this Windows is {arch}")]
    WrongMachine {
        iso: String,
        path: String,
        built: String,
        arch: String,
    },

    #[error(
        "{iso}: {path} has no embedded signature; 64-bit Windows {version} will not load \
         an unsigned boot driver"
    )]
    Unsigned {
        iso: String,
        path: String,
        version: String,
    },
}

fn listed(folders: &[String]) -> String {
    if folders.is_empty() {
        "nothing (this Windows version has no virtio-win folder)".to_owned()
    } else {
        folders.join(", ")
    }
}

crate::error::classify! {
    impl Classify for Refusal {
        fn kind(&self) -> crate::error::Kind {
            crate::error::Kind::BadInput
        }
    }
}
