// Each name in depends(..) that is not a #[memento::tracked] function is
// one error, at the name, saying what to add.

mod units {
    pub fn to_kelvin(celsius: f64) -> f64 {
        celsius + 273.15
    }
}

fn scale() -> f64 {
    2.0
}

struct Lens;

impl Lens {
    fn factor(&self) -> f64 {
        2.0
    }

    #[memento::cache(ignore(self), depends(Self::factor))]
    fn power(&self, x: f64) -> f64 {
        self.factor() * x
    }
}

#[memento::cache(depends(scale, units::to_kelvin))]
fn radiance(celsius: f64) -> f64 {
    scale() * units::to_kelvin(celsius)
}

#[memento::cache(depends(Lens::factor))]
fn through_the_type(x: f64) -> f64 {
    Lens.factor() * x
}

fn main() {}
