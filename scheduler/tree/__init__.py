"""A controller tree: one controller per power-domain subtree and a parent that moves budget
between them (:mod:`scheduler.tree.parent`), run on one virtual clock by
:mod:`scheduler.tree.sim`."""
