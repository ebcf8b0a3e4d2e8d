// `node --import ./register.mjs app.ts`: runs TypeScript on plain Node 20 by stripping the
// types with the TypeScript compiler's transpiler (no type check; `npm run typecheck` does it).
import { register } from "node:module";

register("./ts-loader.mjs", import.meta.url);
