"""SWIM membership with Lifeguard: who is alive, suspect, dead or left."""
