"""The worker's HTTP: two listeners (web.server) — public (web.public: the survey page and the response API) and
internal (web.internal: read APIs, the live dashboard, stats; optional bearer token) — and the pages' HTML
(web.survey_page, web.dashboard, templates/). Nothing here runs outside a worker process."""
