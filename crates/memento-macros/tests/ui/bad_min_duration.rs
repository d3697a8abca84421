#[memento::cache(min_duration = "fast")]
fn f(x: u32) -> u32 {
    x
}

fn main() {}
