"""Privacy of what the public sees: faces (and heads) blurred out of kitchen snapshots.

`faces` finds frontal faces (scikit-image's LBP cascade, whose trained model ships inside the
scikit-image wheel: nothing is downloaded); `blur` holds the pure box math and the pixelate-and-blur
of regions; `public_copy` makes and caches the blurred copy of a snapshot that the public page serves
(the original never leaves to the public). The policy and its measured limits: docs/public.md.
"""
