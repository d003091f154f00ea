fn main() -> std::process::ExitCode {
    vendor::main()
}
