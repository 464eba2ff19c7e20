//! `pave-shim SPEC_JSON`: supervises one replica of a local workload.
//! All the logic is in [`pave_targets::local::shim::run`].

fn main() {
    let Some(spec) = std::env::args_os().nth(1) else {
        eprintln!("usage: pave-shim SPEC_JSON");
        std::process::exit(2);
    };
    std::process::exit(pave_targets::local::shim::run(std::path::Path::new(&spec)));
}
