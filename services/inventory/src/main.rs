fn main() -> std::process::ExitCode {
    inventory::main()
}
