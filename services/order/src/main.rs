fn main() -> std::process::ExitCode {
    order::main()
}
