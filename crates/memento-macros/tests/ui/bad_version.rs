#[memento::cache(version = true)]
fn f(x: u32) -> u32 {
    x
}

fn main() {}
