fn main() -> std::process::ExitCode {
    customer::main()
}
