// Starts Swagger UI (served by this server from the swagger-ui-bundle package) on /openapi.json, read-only.
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    supportedSubmitMethods: [],  // read-only: no "Try it out"
    validatorUrl: null,          // never contact the public validator
    deepLinking: true,
  });
});
