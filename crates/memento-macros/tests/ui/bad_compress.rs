#[memento::cache(compress = "gzip")]
fn f(x: u32) -> u32 {
    x
}

fn main() {}
