/// mimalloc: a request allocates a few dozen small blocks, and glibc's allocator spent
/// about a tenth of a catalog read's instructions on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cart::main()
}
