//! The demo service as its own binary (`pave demo` runs the same code).

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(pave_demo::run())
}
