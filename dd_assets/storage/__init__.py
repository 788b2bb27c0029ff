"""Published stages: the storage layout, the StageStore (records, reads, publish), locks and the IO manager."""
