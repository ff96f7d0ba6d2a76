//! Embeds the libtorch library directory as an rpath so that binaries and test executables find
//! libtorch without `LD_LIBRARY_PATH`, and keeps `libtorch_cuda.so` linked (the linker's
//! `--as-needed` would drop it, leaving CUDA unavailable on GPU machines).
fn main() {
    // Set by torch-sys (`links = "tch"`) for crates that depend on it directly.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
