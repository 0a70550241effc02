"""Human-facing views: terminal (rich) now, the HTML report later."""
