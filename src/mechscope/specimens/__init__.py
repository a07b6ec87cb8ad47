"""The code that builds specimens: the demo on the embedded model, the toy specimens trained from
scratch, the vision specimen. Each runs analyses and records what they found in the archive."""
