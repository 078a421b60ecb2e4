//! The security descriptor wingold gives the first-boot folder and what it copies
//! in: SYSTEM and Administrators full control, Users read and execute, inheritance
//! from above cut (a script Users could change and SYSTEM runs would hand them
//! the machine). Built as a self-relative descriptor, the form NTFS stores.

/// `GENERIC_ALL`-equivalent file rights (FILE_ALL_ACCESS).
const FULL: u32 = 0x001F_01FF;
/// Read and execute (FILE_GENERIC_READ | FILE_GENERIC_EXECUTE).
const READ_EXECUTE: u32 = 0x0012_00A9;
const OBJECT_INHERIT: u8 = 0x01;
const CONTAINER_INHERIT: u8 = 0x02;
const SE_DACL_PRESENT: u16 = 0x0004;
const SE_DACL_PROTECTED: u16 = 0x1000;
const SE_SELF_RELATIVE: u16 = 0x8000;

/// A SID in the NT authority (`S-1-5-…`).
fn nt_sid(subs: &[u32]) -> Vec<u8> {
    let mut b = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, 5];
    for s in subs {
        b.extend_from_slice(&s.to_le_bytes());
    }
    b
}

fn local_system() -> Vec<u8> {
    nt_sid(&[18])
}

fn administrators() -> Vec<u8> {
    nt_sid(&[32, 544])
}

fn users() -> Vec<u8> {
    nt_sid(&[32, 545])
}

/// The descriptor: owner Administrators, group SYSTEM, a protected DACL of three
/// allow entries; for a folder the entries are inherited by what is created in it
/// (the runner's log, its retry counters).
pub fn restricted(folder: bool) -> Vec<u8> {
    let flags = if folder {
        OBJECT_INHERIT | CONTAINER_INHERIT
    } else {
        0
    };
    let mut aces = Vec::new();
    let mut count = 0u16;
    for (sid, mask) in [
        (local_system(), FULL),
        (administrators(), FULL),
        (users(), READ_EXECUTE),
    ] {
        let size = (8 + sid.len()) as u16;
        aces.push(0u8); // ACCESS_ALLOWED_ACE_TYPE
        aces.push(flags);
        aces.extend_from_slice(&size.to_le_bytes());
        aces.extend_from_slice(&mask.to_le_bytes());
        aces.extend_from_slice(&sid);
        count += 1;
    }
    let acl_size = (8 + aces.len()) as u16;
    let mut acl = vec![2u8, 0];
    acl.extend_from_slice(&acl_size.to_le_bytes());
    acl.extend_from_slice(&count.to_le_bytes());
    acl.extend_from_slice(&[0, 0]);
    acl.extend_from_slice(&aces);
    let (owner, group) = (administrators(), local_system());
    let owner_at = 20u32;
    let group_at = owner_at + owner.len() as u32;
    let dacl_at = group_at + group.len() as u32;
    let mut sd = vec![1u8, 0];
    sd.extend_from_slice(&(SE_DACL_PRESENT | SE_DACL_PROTECTED | SE_SELF_RELATIVE).to_le_bytes());
    sd.extend_from_slice(&owner_at.to_le_bytes());
    sd.extend_from_slice(&group_at.to_le_bytes());
    sd.extend_from_slice(&0u32.to_le_bytes()); // no SACL
    sd.extend_from_slice(&dacl_at.to_le_bytes());
    sd.extend_from_slice(&owner);
    sd.extend_from_slice(&group);
    sd.extend_from_slice(&acl);
    sd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_is_self_consistent() {
        let sd = restricted(true);
        let dacl = u32::from_le_bytes(sd[16..20].try_into().unwrap()) as usize;
        let acl_size = u16::from_le_bytes(sd[dacl + 2..dacl + 4].try_into().unwrap()) as usize;
        assert_eq!(dacl + acl_size, sd.len());
        assert_eq!(
            u16::from_le_bytes(sd[dacl + 4..dacl + 6].try_into().unwrap()),
            3
        );
        assert_eq!(sd[dacl + 8 + 1], OBJECT_INHERIT | CONTAINER_INHERIT);
        assert_eq!(restricted(false)[dacl + 8 + 1], 0);
    }
}
