"""`rudder get | reconcile | suspend | resume | history`: kubectl-style commands for users."""
