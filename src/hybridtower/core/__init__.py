"""Small utilities shared by every layer: config (de)serialisation, errors, seeding, atomic IO."""
