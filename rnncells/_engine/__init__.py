"""The engines that run a cell's spec fast: private, read by ``rnncells.unrolling``.

- ``unit``: the contracts a cell fills in its own file (``FusedCell``, ``BlockCell``) and
  the matmul helpers their parts use;
- ``fused``: the fused layer, a whole-layer forward and a hand-written backward, driven
  by a cell's ``FusedCell``;
- ``pallas``: the fused layer's two loops as Pallas kernels, driven by a cell's
  ``BlockCell``;
- ``choice``: which kernel and which scan unroll a layer runs with, from the measured
  table it reads.

The engines never name a cell: they get its unit and blocks from its ``CellSpec``.
"""
