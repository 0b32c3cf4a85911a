"""Explainability engine for brain-MRI classifiers (no Streamlit in here)."""

import numpy  # noqa: F401  (loads numpy's OpenBLAS, so that the limit below reaches it)
from threadpoolctl import threadpool_limits

# numpy's OpenBLAS keeps its idle threads spinning for a while after each call (an Eigen-CAM's
# SVD, a Mahalanobis product), taking the cores from torch's next pass: on 2 cores the ConvNeXt's
# familiarity pass after an Eigen-CAM took 158 ms instead of 57. Torch sets its own threads; the
# linear algebra done in numpy here is small, so it gets one thread wherever core is imported.
threadpool_limits(limits=1, user_api="blas")
