//! Links the system libntfs-3g (Debian ntfs-3g-dev), generates its bindings, and
//! compiles the small C shim that receives its log messages.

fn main() {
    let lib = pkg_config::Config::new()
        .atleast_version("2017.3.23")
        .probe("libntfs-3g")
        .expect("libntfs-3g not found: install Debian ntfs-3g-dev (make setup)");

    let mut shim = cc::Build::new();
    shim.file("src/ntfs/log_shim.c");
    for inc in &lib.include_paths {
        shim.include(inc);
    }
    shim.compile("wingold_ntfs_shim");

    let bindings = bindgen::Builder::default()
        .header("src/ntfs/wrapper.h")
        .allowlist_function("ntfs_(device_alloc|device_free|device_mount|umount|inode_open|inode_close|inode_lookup_by_name|get_ntfs_acl|set_ntfs_acl|volume_get_free_space|attr_open|attr_close|attr_pread|attr_pwrite|attr_truncate|attr_truncate_solid|create|readdir|volume_write_flags|check_logfile|is_logfile_clean)")
        .allowlist_var("AT_UNNAMED|NTFS_MNT_.*|VOLUME_IS_DIRTY")
        .allowlist_type("SECURITY_CONTEXT|ntfs_device_operations|ntfs_volume|ntfs_inode|ntfs_attr|ATTR_TYPES|ntfs_mount_flags|RESTART_PAGE_HEADER")
        .opaque_type("ntfs_inode")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .layout_tests(false)
        .derive_default(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen could not read the libntfs-3g headers");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    bindings
        .write_to_file(out.join("ntfs3g.rs"))
        .expect("write bindings");
    println!("cargo:rerun-if-changed=src/ntfs/wrapper.h");
    println!("cargo:rerun-if-changed=src/ntfs/log_shim.c");
}
