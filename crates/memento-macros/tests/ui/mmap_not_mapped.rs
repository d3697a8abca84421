#[memento::cache(mmap)]
fn f(n: usize) -> Vec<f64> {
    vec![0.0; n]
}

fn main() {}
