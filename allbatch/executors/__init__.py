"""Where the stages run: one process (``allbatch.pipeline.run``), shards of the discovered list in local
worker processes (``local``), or actors on a Ray cluster (``ray_data``). The stages do not know which."""
