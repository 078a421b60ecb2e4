//! Thin safe wrappers over libhivex's node and value calls (the hivex crate keeps
//! its handles' numbers private and refuses value types above REG_QWORD, which real
//! hives carry). Every function takes the open hive whose handles it is given.

use super::NodeH;
use hivex::sys;
use hivex::Hive;
use std::io;

type ValueH = sys::hive_value_h;

/// Copies a 0-terminated array that hivex malloc'd, then frees it.
///
/// # Safety
/// `p` is NULL or a malloc'd array of handles ending with 0.
unsafe fn take_handles(p: *mut usize) -> Vec<usize> {
    if p.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut i = 0;
    // SAFETY: guaranteed by the caller: the array ends with 0.
    unsafe {
        while *p.add(i) != 0 {
            out.push(*p.add(i));
            i += 1;
        }
        libc::free(p as *mut libc::c_void);
    }
    out
}

pub fn root(h: &Hive) -> io::Result<NodeH> {
    // SAFETY: h is an open hive.
    match unsafe { sys::hivex_root(h.as_handle()) } {
        0 => Err(io::Error::last_os_error()),
        n => Ok(n),
    }
}

pub fn children(h: &Hive, node: NodeH) -> Vec<NodeH> {
    // SAFETY: h is open and node came from it; the result is a 0-terminated
    // malloc'd array.
    unsafe { take_handles(sys::hivex_node_children(h.as_handle(), node)) }
}

pub fn node_name(h: &Hive, node: NodeH) -> io::Result<String> {
    // SAFETY: as above; the name is a malloc'd UTF-8 string of `len` bytes (a
    // name may hold NUL characters, which a C string would cut off).
    unsafe {
        let len = sys::hivex_node_name_len(h.as_handle(), node);
        take_string_len(sys::hivex_node_name(h.as_handle(), node), len)
    }
}

pub fn values(h: &Hive, node: NodeH) -> Vec<ValueH> {
    // SAFETY: as for children().
    unsafe { take_handles(sys::hivex_node_values(h.as_handle(), node)) }
}

pub fn value_key(h: &Hive, v: ValueH) -> io::Result<String> {
    // SAFETY: as for node_name().
    unsafe {
        let len = sys::hivex_value_key_len(h.as_handle(), v);
        take_string_len(sys::hivex_value_key(h.as_handle(), v), len)
    }
}

/// Copies `len` bytes of a string that hivex malloc'd, then frees it.
///
/// # Safety
/// `p` is NULL or a malloc'd buffer of at least `len` bytes.
unsafe fn take_string_len(p: *mut std::ffi::c_char, len: usize) -> io::Result<String> {
    if p.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: guaranteed by the caller; the C string's own length bounds it too.
    unsafe {
        let c_len = std::ffi::CStr::from_ptr(p).to_bytes().len();
        let n = if len > c_len { len } else { c_len };
        let bytes = std::slice::from_raw_parts(p as *const u8, n);
        let s = String::from_utf8_lossy(bytes).into_owned();
        libc::free(p as *mut libc::c_void);
        Ok(s)
    }
}

fn cstring(s: &str) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| io::Error::other("a name holds a NUL character"))
}

pub fn add_child(h: &Hive, parent: NodeH, name: &str) -> io::Result<NodeH> {
    let c = cstring(name)?;
    // SAFETY: h is open for writing and parent came from it; c is NUL-terminated.
    match unsafe { sys::hivex_node_add_child(h.as_handle(), parent, c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        n => Ok(n),
    }
}

pub fn delete_child(h: &Hive, node: NodeH) -> io::Result<()> {
    // SAFETY: h is open for writing and node came from it.
    match unsafe { sys::hivex_node_delete_child(h.as_handle(), node) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

pub fn set_values(h: &Hive, node: NodeH, values: &[(String, u32, Vec<u8>)]) -> io::Result<()> {
    let names: Vec<std::ffi::CString> = values
        .iter()
        .map(|(n, _, _)| cstring(n))
        .collect::<io::Result<_>>()?;
    let raw: Vec<sys::hive_set_value> = values
        .iter()
        .zip(&names)
        .map(|((_, kind, data), c)| sys::hive_set_value {
            key: c.as_ptr() as *mut _,
            t: *kind as sys::hive_type,
            len: data.len(),
            value: data.as_ptr() as *mut _,
        })
        .collect();
    // SAFETY: h is open for writing, node came from it; the array and what it
    // points to live for the call, and hivex copies them.
    match unsafe { sys::hivex_node_set_values(h.as_handle(), node, raw.len(), raw.as_ptr(), 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

pub fn commit(h: &Hive) -> io::Result<()> {
    // SAFETY: h is open for writing; NULL commits to the file it was opened from.
    match unsafe { sys::hivex_commit(h.as_handle(), std::ptr::null(), 0) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The value's type number and raw bytes.
pub fn value_value(h: &Hive, v: ValueH) -> io::Result<(u32, Vec<u8>)> {
    let mut kind: sys::hive_type = 0;
    let mut len: usize = 0;
    // SAFETY: h is open and v came from it; hivex returns a malloc'd buffer of
    // `len` bytes (or NULL with errno set), which we copy and free.
    unsafe {
        let data = sys::hivex_value_value(h.as_handle(), v, &mut kind, &mut len);
        if data.is_null() {
            return Err(io::Error::last_os_error());
        }
        let bytes = std::slice::from_raw_parts(data as *const u8, len).to_vec();
        libc::free(data as *mut libc::c_void);
        Ok((kind, bytes))
    }
}
