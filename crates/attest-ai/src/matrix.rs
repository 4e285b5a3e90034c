//! A dense row-major matrix of `f64` features; `NaN` is a missing value.

use crate::AiError;

/// Dense row-major feature matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    data: Vec<f64>,
    n_rows: usize,
    n_cols: usize,
}

impl Matrix {
    /// Wraps row-major data; `data.len()` must equal `n_rows * n_cols`.
    pub fn new(data: Vec<f64>, n_rows: usize, n_cols: usize) -> Result<Self, AiError> {
        if data.len() != n_rows.saturating_mul(n_cols) {
            return Err(AiError::InvalidArgument(format!(
                "matrix data has {} values, expected {n_rows} x {n_cols}",
                data.len()
            )));
        }
        Ok(Matrix {
            data,
            n_rows,
            n_cols,
        })
    }

    /// Builds a matrix from rows of equal length.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self, AiError> {
        let n_cols = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * n_cols);
        for (i, r) in rows.iter().enumerate() {
            if r.len() != n_cols {
                return Err(AiError::InvalidArgument(format!(
                    "row {i} has {} values, row 0 has {n_cols}",
                    r.len()
                )));
            }
            data.extend_from_slice(r);
        }
        Ok(Matrix {
            data,
            n_rows: rows.len(),
            n_cols,
        })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    /// Number of columns.
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= n_rows`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }

    /// Iterates over rows.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = &[f64]> + '_ {
        // chunks_exact on an empty-width matrix would panic; yield empty rows instead.
        (0..self.n_rows).map(move |i| self.row(i))
    }

    /// The raw row-major values.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Rows `start..end` as a new matrix.
    pub fn slice_rows(&self, start: usize, end: usize) -> Matrix {
        let end = end.min(self.n_rows);
        let start = start.min(end);
        Matrix {
            data: self.data[start * self.n_cols..end * self.n_cols].to_vec(),
            n_rows: end - start,
            n_cols: self.n_cols,
        }
    }
}
