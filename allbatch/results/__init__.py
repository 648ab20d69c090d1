"""results.h5: the schema, a crash-safe resumable writer, and export to CSV."""
