//! Tensor types with symbolic dimensions.
//!
//! A dimension is an *affine* form over the three program symbols — batch `B`, past tokens
//! `P`, new tokens `S` — plus a constant: `576`, `S`, `P+S`, `2*S+1`. That is exactly what a
//! LLaMA forward pass needs (the KV cache holds `P+S` rows after an append) and keeps
//! equality decidable: two dims are equal iff their canonical forms are. Element counts are
//! products of dims, compared as polynomials ([`Poly`]), so `reshape` can be checked without
//! knowing the symbols' values.
//!
//! One compiled program serves prefill (`S` = prompt length) and decode (`S` = 1); the
//! bounds in [`SymTable`] let planners size buffers for the worst case.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use crate::dtype::DType;

/// A program symbol. The order here is the canonical print order (`P+S`, not `S+P`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Sym {
    /// Concurrent sequences.
    B = 0,
    /// Tokens already in the KV cache.
    P = 1,
    /// New tokens in this call.
    S = 2,
}

impl Sym {
    pub const ALL: [Sym; 3] = [Sym::B, Sym::P, Sym::S];

    pub fn name(self) -> &'static str {
        match self {
            Sym::B => "B",
            Sym::P => "P",
            Sym::S => "S",
        }
    }

    pub fn from_name(s: &str) -> Option<Sym> {
        Sym::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// `c + Σ coef[sym]·sym`, all non-negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Dim {
    pub konst: u64,
    /// Coefficients indexed by `Sym as usize`.
    pub coef: [u64; 3],
}

impl Dim {
    pub const fn c(n: u64) -> Dim {
        Dim {
            konst: n,
            coef: [0; 3],
        }
    }

    pub const fn sym(s: Sym) -> Dim {
        let mut coef = [0; 3];
        coef[s as usize] = 1;
        Dim { konst: 0, coef }
    }

    pub const B: Dim = Dim::sym(Sym::B);
    pub const P: Dim = Dim::sym(Sym::P);
    pub const S: Dim = Dim::sym(Sym::S);

    /// The value if the dim does not depend on any symbol.
    pub fn as_const(&self) -> Option<u64> {
        (self.coef == [0; 3]).then_some(self.konst)
    }

    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    pub fn checked_add(&self, o: &Dim) -> Option<Dim> {
        let mut coef = [0; 3];
        for (i, c) in coef.iter_mut().enumerate() {
            *c = self.coef[i].checked_add(o.coef[i])?;
        }
        Some(Dim {
            konst: self.konst.checked_add(o.konst)?,
            coef,
        })
    }

    /// Multiply by a constant.
    pub fn checked_scale(&self, k: u64) -> Option<Dim> {
        let mut coef = [0; 3];
        for (i, c) in coef.iter_mut().enumerate() {
            *c = self.coef[i].checked_mul(k)?;
        }
        Some(Dim {
            konst: self.konst.checked_mul(k)?,
            coef,
        })
    }

    /// Value under concrete bindings; `None` on overflow.
    pub fn eval(&self, b: &Bindings) -> Option<u64> {
        let mut v = self.konst;
        for s in Sym::ALL {
            v = v.checked_add(self.coef[s as usize].checked_mul(b.get(s))?)?;
        }
        Some(v)
    }

    /// Largest value under the table's bounds; `None` if a symbol it uses is unbounded.
    pub fn upper_bound(&self, t: &SymTable) -> Option<u64> {
        let mut v = self.konst;
        for s in Sym::ALL {
            let c = self.coef[s as usize];
            if c != 0 {
                v = v.checked_add(c.checked_mul(t.bound(s)?)?)?;
            }
        }
        Some(v)
    }

    pub fn to_poly(&self) -> Poly {
        let mut p = Poly::default();
        if self.konst != 0 {
            p.terms.insert([0; 3], self.konst as i128);
        }
        for s in Sym::ALL {
            let c = self.coef[s as usize];
            if c != 0 {
                let mut e = [0u8; 3];
                e[s as usize] = 1;
                p.terms.insert(e, c as i128);
            }
        }
        p
    }

    pub fn mentions(&self, s: Sym) -> bool {
        self.coef[s as usize] != 0
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Dim {
        Dim::c(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in Sym::ALL {
            let c = self.coef[s as usize];
            if c == 0 {
                continue;
            }
            if !first {
                f.write_str("+")?;
            }
            first = false;
            if c == 1 {
                write!(f, "{}", s.name())?;
            } else {
                write!(f, "{}*{}", c, s.name())?;
            }
        }
        if first {
            write!(f, "{}", self.konst)
        } else if self.konst != 0 {
            write!(f, "+{}", self.konst)
        } else {
            Ok(())
        }
    }
}

/// A polynomial in the symbols, for comparing element counts symbolically.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Poly {
    /// Exponent vector (indexed by `Sym as usize`) → coefficient; zero terms are absent.
    pub terms: BTreeMap<[u8; 3], i128>,
}

impl Poly {
    pub fn one() -> Poly {
        let mut p = Poly::default();
        p.terms.insert([0; 3], 1);
        p
    }

    /// Product, or `None` if a coefficient or exponent overflows.
    pub fn mul(&self, o: &Poly) -> Option<Poly> {
        let mut out = Poly::default();
        for (ea, ca) in &self.terms {
            for (eb, cb) in &o.terms {
                let mut e = [0u8; 3];
                for i in 0..3 {
                    e[i] = ea[i].checked_add(eb[i])?;
                }
                let c = ca.checked_mul(*cb)?;
                let slot = out.terms.entry(e).or_insert(0);
                *slot = slot.checked_add(c)?;
            }
        }
        out.terms.retain(|_, c| *c != 0);
        Some(out)
    }
}

/// Concrete values of the symbols for one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Bindings {
    pub b: u64,
    pub p: u64,
    pub s: u64,
}

impl Bindings {
    pub fn get(&self, s: Sym) -> u64 {
        match s {
            Sym::B => self.b,
            Sym::P => self.p,
            Sym::S => self.s,
        }
    }
}

/// Upper bounds of the symbols (for planning); `None` means unbounded.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SymTable {
    pub bounds: [Option<u64>; 3],
}

impl SymTable {
    pub fn bound(&self, s: Sym) -> Option<u64> {
        self.bounds[s as usize]
    }

    pub fn set_bound(&mut self, s: Sym, b: Option<u64>) {
        self.bounds[s as usize] = b;
    }
}

/// A tensor type: element type and shape (row-major, innermost dimension last).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorType {
        TensorType { dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn with_dtype(&self, dtype: DType) -> TensorType {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }

    /// Element count as a polynomial; `None` on overflow.
    pub fn numel_poly(&self) -> Option<Poly> {
        self.shape
            .iter()
            .try_fold(Poly::one(), |acc, d| acc.mul(&d.to_poly()))
    }

    /// Concrete shape under bindings.
    pub fn eval_shape(&self, b: &Bindings) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.eval(b).and_then(|v| usize::try_from(v).ok()))
            .collect()
    }

    /// Element count if every dim is constant.
    pub fn const_numel(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.as_const()?))
    }

    /// Worst-case bytes under the symbol bounds.
    pub fn max_bytes(&self, t: &SymTable) -> Option<u64> {
        let n = self
            .shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(d.upper_bound(t)?))?;
        self.dtype.bytes_for(n)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Shorthand for building shapes in code: `shape![Dim::B, Dim::S, 576]`.
#[macro_export]
macro_rules! shape {
    ($($d:expr),* $(,)?) => { vec![$($crate::types::Dim::from($d)),*] };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dim_display() {
        assert_eq!(Dim::c(576).to_string(), "576");
        assert_eq!(Dim::S.to_string(), "S");
        assert_eq!(Dim::S.checked_add(&Dim::P).unwrap().to_string(), "P+S");
        assert_eq!(
            Dim::S
                .checked_scale(2)
                .unwrap()
                .checked_add(&Dim::c(1))
                .unwrap()
                .to_string(),
            "2*S+1"
        );
        assert_eq!(Dim::c(0).to_string(), "0");
    }

    #[test]
    fn poly_equality_for_reshape() {
        // [B, S, 576] has as many elements as [B, S, 9, 64]
        let a = TensorType::new(DType::F32, vec![Dim::B, Dim::S, Dim::c(576)]);
        let b = TensorType::new(DType::F32, vec![Dim::B, Dim::S, Dim::c(9), Dim::c(64)]);
        let c = TensorType::new(DType::F32, vec![Dim::B, Dim::P, Dim::c(576)]);
        assert_eq!(a.numel_poly(), b.numel_poly());
        assert_ne!(a.numel_poly(), c.numel_poly());
    }

    #[test]
    fn eval_and_bounds() {
        let d = Dim::P.checked_add(&Dim::S).unwrap();
        assert_eq!(d.eval(&Bindings { b: 1, p: 7, s: 3 }), Some(10));
        let mut t = SymTable::default();
        t.set_bound(Sym::P, Some(100));
        assert_eq!(d.upper_bound(&t), None);
        t.set_bound(Sym::S, Some(100));
        assert_eq!(d.upper_bound(&t), Some(200));
    }
}
