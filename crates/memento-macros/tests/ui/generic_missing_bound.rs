// A generic function's bounds must prove what is stored; the argument is
// fine (`T: Serialize`), the result cannot be read back.
#[memento::cache]
fn first<T: serde::Serialize + Clone + 'static>(items: Vec<T>) -> T {
    items[0].clone()
}

fn main() {}
