"""Data: readers of the labelled image sets (``sources``), grouped and stratified
splits (``splits``) and the generated demo photos (``synthetic``)."""
