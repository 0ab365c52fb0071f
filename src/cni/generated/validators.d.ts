// Types of validators.js, which scripts/gen-validators.mjs generates at build time.
export interface ValidationError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}
export interface CompiledValidator {
  (data: unknown): boolean;
  errors?: ValidationError[] | null;
}
export declare const confList: CompiledValidator;
export declare const singleConf: CompiledValidator;
export declare const pluginFile: CompiledValidator;
export declare const pluginStdin: CompiledValidator;
export declare const result: CompiledValidator;
export declare const meta: CompiledValidator;
export declare const pod: CompiledValidator;
export declare const nad: CompiledValidator;
