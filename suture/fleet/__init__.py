"""The operator's side of the fleet API: a small client the `suture fleet` commands use."""
