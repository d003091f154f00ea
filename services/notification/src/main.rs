fn main() -> std::process::ExitCode {
    notification::main()
}
