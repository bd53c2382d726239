//! The ProtocolRollout reconciler.
