"""What the trained encoders are worth, as data: downstream evaluation (:mod:`.downstream`,
:mod:`.evaluate`, writing ``downstream.json``), the label oracles (:mod:`.oracles`,
``oracles.json``), the emulator's performance prediction (:mod:`.performance`), statistics
(:mod:`.statistics`), the verdict on the paper's claims (:mod:`.verdict`) and the settings that
depart from the paper (:mod:`.departures`). Nothing here writes Markdown: :mod:`rnnray.report` does."""
