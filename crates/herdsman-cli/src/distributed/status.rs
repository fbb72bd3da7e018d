//! `herdsman status --ledger URL OUTPUT`: a shared job across its nodes.
