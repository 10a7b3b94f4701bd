"""Local runtime (a kubelet stand-in): runs the processes of Pods and Deployments on this host."""
