//! One command per record.
