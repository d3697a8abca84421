#[memento::cache(memroy = CACHE)]
fn f(x: u32) -> u32 {
    x
}

fn main() {}
