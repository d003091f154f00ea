fn main() -> std::process::ExitCode {
    cart::main()
}
