//! Upstream URLs: normalization and the three request forms (pure, no network).
