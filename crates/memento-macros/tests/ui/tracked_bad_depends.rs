// A tracked helper's own depends(..) is checked as a cached function's is.

fn inner() -> f64 {
    2.0
}

#[memento::tracked(depends(inner))]
fn outer(x: f64) -> f64 {
    inner() * x
}

struct Lens<T>(T);

impl<T> Lens<T> {
    fn factor(&self) -> f64 {
        2.0
    }

    #[memento::tracked(depends(Self::factor, inner))]
    fn focus(&self, x: f64) -> f64 {
        self.factor() * inner() * x
    }
}

#[memento::tracked(deps(inner))]
fn misspelled(x: f64) -> f64 {
    inner() * x
}

fn main() {}
