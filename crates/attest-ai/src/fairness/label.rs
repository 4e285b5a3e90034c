//! Binary labels: which Rust values count as 0/1 labels.

/// A value usable as a binary label (`y_true` / `y_pred`): exactly 0 or 1.
///
/// Implemented for `bool`, the integer types and the float types; any other value (2, -1, 0.5,
/// NaN) is rejected with [`AiError::InvalidValue`](crate::AiError::InvalidValue) naming the
/// column and row.
pub trait BinaryLabel: Copy {
    /// `Some(false)` for 0, `Some(true)` for 1, `None` for anything else.
    fn as_binary(self) -> Option<bool>;
    /// The value as text, for error messages.
    fn describe(self) -> String;
}

impl BinaryLabel for bool {
    fn as_binary(self) -> Option<bool> {
        Some(self)
    }
    fn describe(self) -> String {
        self.to_string()
    }
}

macro_rules! int_label {
    ($($t:ty),*) => {$(
        impl BinaryLabel for $t {
            #[inline]
            fn as_binary(self) -> Option<bool> {
                match self {
                    0 => Some(false),
                    1 => Some(true),
                    _ => None,
                }
            }
            fn describe(self) -> String {
                self.to_string()
            }
        }
    )*};
}
int_label!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

macro_rules! float_label {
    ($($t:ty),*) => {$(
        impl BinaryLabel for $t {
            #[inline]
            fn as_binary(self) -> Option<bool> {
                if self == 0.0 {
                    Some(false)
                } else if self == 1.0 {
                    Some(true)
                } else {
                    None
                }
            }
            fn describe(self) -> String {
                self.to_string()
            }
        }
    )*};
}
float_label!(f32, f64);
