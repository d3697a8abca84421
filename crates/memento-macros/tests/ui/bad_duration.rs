#[memento::cache(expires_after = "a week")]
fn f(x: u32) -> u32 {
    x
}

fn main() {}
