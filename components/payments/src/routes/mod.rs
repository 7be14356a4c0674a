//! One module per route, as in the original app (`new`).

mod new;

pub use new::create;
