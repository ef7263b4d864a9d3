"""Methods (pipelines) and estimators, one file each, registered by name.

``METHODS`` discovers every module of this package, ``ESTIMATORS`` every module of
``methods.estimators``: a new method or estimator is one file plus one config, no edit here.
"""
