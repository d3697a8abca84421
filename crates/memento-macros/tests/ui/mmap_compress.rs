#[memento::cache(mmap, compress = "lz4")]
fn f(n: usize) -> memento::Mapped<Vec<f64>> {
    vec![0.0; n]
}

fn main() {}
