//! The `lpuc` command line: argument parsing only; every command calls into the crates.
fn main() {
    println!("lpuc");
}
