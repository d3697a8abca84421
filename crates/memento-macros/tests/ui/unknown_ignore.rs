#[memento::cache(ignore(verbose, progres))]
fn f(x: u32, verbose: bool, progress: u8) -> u32 {
    let _ = (verbose, progress);
    x
}

fn main() {}
