"""The run: one plan (``plan``), one tally (``tally``), and where the stages run: in this process
(``engine``), as shards in local worker processes (``local``), or as actors on a Ray cluster (``ray_data``).
The stages do not know which executor runs them."""
