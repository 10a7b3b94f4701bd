"""The ``ambient`` command line (istioctl + kubectl for this mesh)."""
